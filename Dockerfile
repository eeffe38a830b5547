# syntax=docker/dockerfile:1
# Build a static sealpost binary, then ship it alone on a non-root image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sealpost ./cmd/sealpost

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sealpost /usr/local/bin/sealpost
# The data dir holds the JetStream store and the local KMS master key.
VOLUME ["/var/lib/sealpost"]
ENV SEALPOST_DATA=/var/lib/sealpost
USER nonroot:nonroot
EXPOSE 8443 2525 9090
ENTRYPOINT ["/usr/local/bin/sealpost"]
CMD ["serve", "--config", "/etc/sealpost/sealpost.yaml"]
