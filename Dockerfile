# Nexus Proxy on the official Deno image, pinned to the Deno release the binaries are built with.
#   docker build -t nexus .
#   docker run -d --name nexus-node -p 80:80 -p 443:443 -p 8443:8443 -v /etc/nexus:/etc/nexus:ro nexus
#   docker run -d --name nexus-agent -v /etc/nexus:/etc/nexus:ro nexus agent --config /etc/nexus/agent.yaml
# More in docs/install.md.
FROM denoland/deno:2.9.6

WORKDIR /app

# Dependencies first, so that this layer is rebuilt only when deno.json or deno.lock change.
COPY deno.json deno.lock* ./
RUN deno install

# Then the program, with everything it imports fetched now: the container never downloads code at start.
COPY src/ src/
RUN deno install --entrypoint src/main.ts && chown root:root /deno-dir \
 && mkdir -p /var/lib/nexus && chown deno:deno /var/lib/nexus && chmod 0700 /var/lib/nexus

# The image's unprivileged user (uid 1993). The code and the module cache (DENO_DIR, /deno-dir) are owned by
# root, so the proxy cannot change what it runs; Deno keeps its analysis caches in memory instead. Docker lets any user bind ports below 1024 inside the container's own network
# namespace, so no capability is needed for 80 and 443.
USER deno
# The relay's ports and the hub's (backendListenAddress ":8443" in config.example.yaml).
EXPOSE 80 443 8443
# The one place the node writes: its ACME account key and certificates (hubAcme.stateDir), kept across restarts.
VOLUME /var/lib/nexus

# The same permissions as the release binaries (scripts/compile.ts, RUNTIME_PERMISSIONS and writePermission):
# network, file reads, NEXUS_* variables (and the yaml package's two debug switches), writing only under
# /var/lib/nexus; no run, FFI or sys. And the binaries' V8 flags (RUNTIME_V8_FLAGS): a 1 MiB young generation,
# which keeps RSS during and after transfers lower at no cost in CPU (README, "Memory").
# tini, from the base image, forwards SIGTERM so that `docker stop` drains instead of waiting for SIGKILL.
# Liveness from the admin listener's /healthz, which needs no token: give the config an admin block listening on
# 127.0.0.1:9100 (node and agent alike), or point NEXUS_HEALTH_URL elsewhere. `deno eval` may use the network.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["deno", "eval", "const r = await fetch(Deno.env.get('NEXUS_HEALTH_URL') ?? 'http://127.0.0.1:9100/healthz').catch(() => null); Deno.exit(r?.ok ? 0 : 1);"]

ENTRYPOINT ["/tini", "--", "deno", "run", "--cached-only", "--v8-flags=--max-semi-space-size=1,--expose-gc", \
            "--allow-net", "--allow-read", "--allow-env=NEXUS_*,LOG_TOKENS,LOG_STREAM", \
            "--allow-write=/var/lib/nexus", "src/main.ts"]
CMD ["serve", "--config", "/etc/nexus/node.yaml"]
