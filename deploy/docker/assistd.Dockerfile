# assistd: build on Debian 12 with the project's own dependency script, run on
# debian:12-slim as a non-root user with only the shared libraries the binary
# links (found with ldd and dpkg in the build stage, so the list never drifts).
#   docker build -f deploy/docker/assistd.Dockerfile -t assistd .
FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DASSISTD_BUILD_TESTS=OFF -DASSISTD_BUILD_BENCH=OFF \
 && cmake --build /build --target assistd assistd-healthcheck \
 && ldd /build/assistd | awk '$3 ~ /^\// {print $3}' | xargs -r dpkg -S 2>/dev/null | cut -d: -f1 | sort -u \
    > /build/runtime-packages.txt

FROM debian:12-slim
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /build/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -qq \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y -qq --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --system --uid 10001 --home-dir /var/lib/assistd --create-home assistd
COPY --from=build /build/assistd /build/assistd-healthcheck /usr/local/bin/
COPY --from=build /src/web /usr/share/assistd/web
USER 10001:10001
WORKDIR /var/lib/assistd
# 8080: HTTP API, chat page, /healthz, /readyz, /metrics.
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/assistd-healthcheck", "probe", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/assistd"]
CMD ["serve", "--config", "/etc/assistd/config.yaml"]
