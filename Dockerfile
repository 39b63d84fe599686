# syntax=docker/dockerfile:1
# profilestore: build with the Go toolchain, run on a static, non-root image.
# Configured by environment (see docker-compose.yml):
#   PROFILESTORE_STORE=bolt|esdb  PROFILESTORE_ESDB_URL=esdb://...
#   PROFILESTORE_LISTEN=0.0.0.0:8318  PROFILESTORE_DATA_DIR=/data

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Dependencies first, so that source changes reuse the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/profilestore ./cmd/profilestore \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/profilestore /usr/local/bin/profilestore
# The data directory holds the bolt store, the keyring and the view store;
# the image runs as uid 65532, which must own it.
COPY --from=build --chown=65532:65532 /out/data /data
ENV PROFILESTORE_LISTEN=0.0.0.0:8318 \
    PROFILESTORE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8318
ENTRYPOINT ["/usr/local/bin/profilestore"]
CMD ["serve"]
