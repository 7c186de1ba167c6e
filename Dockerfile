# keygate: a static, non-root image holding only the binary.
# envoy/dockerfile_test.go runs this file's `go build` line verbatim, so the two cannot drift.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t keygate:local .
#
# The build context leaves out .git (.dockerignore), so Go records no version of its own:
# VERSION is what `keygate version` prints. Unset, it prints "(devel)".

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Never fetch another toolchain in the build: the image's Go is the one go.mod asks for.
ENV GOTOOLCHAIN=local
# Modules first, so editing code does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Declared here, not above: a new VERSION then rebuilds only what follows.
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -X main.version=${VERSION}" -o /out/keygate ./cmd/keygate
# The embedded store's directory, copied into the final stage owned by the runtime user:
# distroless has no shell to mkdir or chown there.
RUN mkdir -p -m 0700 /out/data

# distroless/static: CA certificates, tzdata and /etc/passwd, no shell, user 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keygate /usr/local/bin/keygate
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# Without --database-url, `serve` keeps its embedded store in /data/keygate.db: mount a
# volume there, or the keys are gone with the container. Docker copies /data's owner into
# a new named volume, so the runtime user can write it.
ENV KEYGATE_DATA_DIR=/data
VOLUME ["/data"]
# 9001: ext_authz gRPC (and grpc.health.v1); 8001: management API, /healthz, /readyz, /metrics.
EXPOSE 9001 8001
# No shell and no curl in the image: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/keygate", "healthcheck", "--url", "http://127.0.0.1:8001/healthz"]
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve"]
