# The health-check sidecar: one small binary (assistd-healthcheck, plain
# sockets, no library beyond libstdc++) on debian:12-slim, non-root.
#   docker build -f deploy/docker/healthcheck.Dockerfile -t assistd-healthcheck .
FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY src/healthcheck/main.cpp .
RUN g++ -std=c++20 -O2 -Wall -Wextra -Werror -pthread main.cpp -o /assistd-healthcheck

FROM debian:12-slim
RUN useradd --system --uid 10002 --no-create-home healthcheck
COPY --from=build /assistd-healthcheck /usr/local/bin/assistd-healthcheck
USER 10002:10002
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/assistd-healthcheck"]
CMD ["watch", "--target", "http://127.0.0.1:8080", "--listen", "0.0.0.0:8081"]
