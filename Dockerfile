# cosmount image: the CSI plugin (cosmount-csi), the per-volume FUSE server it starts (cosmount) and the
# local IAM + COS emulator (cosmount-emulator), all static, on a small Debian with fuse3 and CA certificates.
#   make image            # docker build -t cosmount:$(VERSION) .

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits reuse the module download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# -mod=mod as in every build of this repository; CGO_ENABLED=0 (set by `make build`) makes the binaries static.
ENV GOFLAGS=-mod=mod
RUN make build VERSION=${VERSION}

FROM debian:bookworm-slim
# fuse3 provides fusermount3 and /etc/fuse.conf; CA certificates are needed to reach IAM and COS over TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/bin/cosmount /src/bin/cosmount-csi /src/bin/cosmount-emulator /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/cosmount-csi"]
