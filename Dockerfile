# syntax=docker/dockerfile:1
# Build a static sealpost binary, then ship it alone on a non-root image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version comes from the build info (module version or VCS revision);
# pass --build-arg VERSION=v1.2.3 when the build context has no .git.
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sealpost ./cmd/sealpost
# The data dir, owned by distroless's nonroot user (65532) and private to
# it, so that a new volume mounted there starts out writable for sealpost.
RUN install -d -m 0700 -o 65532 -g 65532 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sealpost /usr/local/bin/sealpost
COPY --from=build --chown=65532:65532 --chmod=0700 /out/data /var/lib/sealpost
# The data dir holds the JetStream store and the local KMS master key.
VOLUME ["/var/lib/sealpost"]
ENV SEALPOST_DATA=/var/lib/sealpost
USER nonroot:nonroot
EXPOSE 8443 2525 9090
# distroless has no shell or curl: the binary probes its own admin
# listener (SEALPOST_ADMIN_URL, default http://127.0.0.1:9090).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/sealpost", "health"]
ENTRYPOINT ["/usr/local/bin/sealpost"]
CMD ["serve", "--config", "/etc/sealpost/sealpost.yaml"]
