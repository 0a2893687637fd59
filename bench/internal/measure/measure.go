// Package measure holds what the benchmark tools (cmd/pseudobench and
// package compare) both need to time work the same way: the CPU time of
// the process, and the median.
package measure

import "slices"

// Median is the median of xs (the mean of the two middle values for an
// even count), 0 for none. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
