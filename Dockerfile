# tailor for hosts with internet access: built on Debian 12 with Go and
# OpenBLAS, run on Debian 12 slim with OpenBLAS and Debian's Fashion-MNIST
# (the compose "data" job reads it from /usr/share/datasets/fashion-mnist).
#
#   docker build -t tailor .
#   docker run --rm tailor --help
#
# The image holds tailor and the helper (deploy/helper: health checks,
# "{hostname}" in arguments, the compose cluster's certificates). docker-compose.yml builds and uses it. Without
# a registry, deploy/compose.scratch.yml builds FROM-scratch images instead.
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -tags openblas -ldflags '-s -w' -o /out/tailor ./cmd/tailor \
 && CGO_ENABLED=0 go build -trimpath -tags deploy -ldflags '-s -w' -o /out/helper ./deploy/helper

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libopenblas0-pthread dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /work --create-home --shell /usr/sbin/nologin tailor \
 && install -d -o tailor -g tailor /out \
 && install -d -m 0700 -o tailor -g tailor /certs
COPY --from=build /out/tailor /out/helper /usr/local/bin/
# named volumes mounted on /work, /out and /certs start out owned by tailor
USER tailor
WORKDIR /work
ENTRYPOINT ["tailor"]
