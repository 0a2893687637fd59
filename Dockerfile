# syntax=docker/dockerfile:1
#
# The container image of the service and its CLIs: pseudonymizer (the
# entrypoint), pseudo and pseudoctl, static (CGO_ENABLED=0), on a distroless
# base with no shell nor package manager, run as the non-root user 65532.
#
#   docker build --build-arg VERSION=v0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#       -t registry.example/ehealth/pseudonymizer:0.1.0 .
#
# The build context has no .git (.dockerignore): VERSION and REVISION reach
# -version and pseudonymizer_build_info through the linker. Pin the base
# images by digest in production. deploy/kubernetes/deployment.yaml runs this
# image; deploy/dockerfile_test.go checks both.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
ARG REVISION=""
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo.version=${VERSION} -X github.com/ehealth-pseudo/pseudonymizer/internal/buildinfo.revision=${REVISION}" \
        -o /out/ ./cmd/pseudonymizer ./cmd/pseudo ./cmd/pseudoctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pseudonymizer /out/pseudo /out/pseudoctl /usr/local/bin/
USER 65532:65532
EXPOSE 50051 8081 9090
ENTRYPOINT ["/usr/local/bin/pseudonymizer"]
