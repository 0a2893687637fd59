package owner_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonym"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// receive plays client and service: it returns a transit pseudonym of id,
// as the owner receives it from prescriber software.
func receive(d *pseudonymizer.Domain, id string, now time.Time) *pseudonym.Transit {
	blinded, u, _ := client.Blind([]byte(id))
	ev, _ := d.Pseudonymize(blinded, &pseudonymizer.Params{Now: now})
	tp, _ := u.Unblind(ev.Point[:], ev.TransitInfo)
	return tp
}

// A prescription service stores pseudonyms at rest, with its own second
// key, and checks the rules the service attached.
func Example() {
	ctx := context.Background()
	kd, _ := keys.GenerateDomain(keys.DomainSpec{Name: "prescriptions_v1", Audience: "urn:be:ehealth:prescriptions"}, nil)
	service, _ := pseudonymizer.NewDomain(kd)

	// The owner reads its transit keys (never k) from a KeyProvider: in
	// production keys/vault's store with the owner's Vault token.
	k2, _ := keys.NewScalar(nil) // double pseudonymization: kept by the owner only
	o, err := owner.New(ctx, kd.Name, owner.StaticKeys{D: kd}, owner.WithSecondKey(k2))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer o.Close()

	issued := time.Now()
	tp1 := receive(service, "85073003328", issued)
	tp2 := receive(service, "85073003328", issued)
	fmt.Println("transit forms differ:", tp1.String() != tp2.String())

	p1, _ := o.AtRest(ctx, tp1)
	p2, _ := o.AtRest(ctx, tp2)
	fmt.Println("same pseudonym at rest:", p1 == p2, len(p1.String()))

	// A transit pseudonym expires (ttl, 5 minutes by default, ±60 s skew).
	_, err = o.AtRest(ctx, tp1, owner.At(issued.Add(time.Hour)))
	fmt.Println(errors.Is(err, owner.ErrExpired))

	// Back to a client, bound to one doctor: only she can identify it.
	out, _ := o.InTransit(p1, owner.Subject("dr-alice"), owner.TTL(2*time.Minute))
	sub, _ := out.Subject()
	fmt.Println(sub)
	// Output:
	// transit forms differ: true
	// same pseudonym at rest: true 43
	// true
	// dr-alice
}
