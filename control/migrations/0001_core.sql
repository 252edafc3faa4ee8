-- Core schema: versioned state, regions, edge nodes, templates, backends, keys, tokens.

CREATE TABLE system_version (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version     bigint NOT NULL DEFAULT 0,
    epoch       text NOT NULL,
    floor_version bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE system_version IS 'The one row holding the global system version; every write transaction bumps it last, so commit order equals version order.';
COMMENT ON COLUMN system_version.singleton IS 'Always true: enforces a single row.';
COMMENT ON COLUMN system_version.version IS 'Current system version: the version of the last committed write transaction.';
COMMENT ON COLUMN system_version.epoch IS 'Random id of this database lineage; changes when the database is restored, so edges re-snapshot.';
COMMENT ON COLUMN system_version.floor_version IS 'Compaction floor: change rows at or below it are gone; a `since` below it needs a snapshot.';
INSERT INTO system_version (version, epoch) VALUES (0, md5(random()::text || clock_timestamp()::text));

CREATE TABLE changes (
    version     bigint NOT NULL,
    seq         integer NOT NULL,
    kind        text NOT NULL,
    id          text NOT NULL,
    op          text NOT NULL CHECK (op IN ('upsert', 'delete')),
    body        jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, seq)
);
COMMENT ON TABLE changes IS 'Change log: what each system version changed, read by edges through /v1/sync/changes.';
COMMENT ON COLUMN changes.version IS 'System version of the transaction that made the change.';
COMMENT ON COLUMN changes.seq IS 'Order of the change within its version.';
COMMENT ON COLUMN changes.kind IS 'Kind of object changed: region, node, template, backend, key, signing_key, revocation.';
COMMENT ON COLUMN changes.id IS 'Id of the object changed (its primary key as text).';
COMMENT ON COLUMN changes.op IS 'upsert (body is the whole new object) or delete (body is null).';
COMMENT ON COLUMN changes.body IS 'The whole object after the change, as edges store it; null for delete.';
COMMENT ON COLUMN changes.created_at IS 'Commit time of the change, used by age-based compaction.';
CREATE INDEX changes_created_at ON changes (created_at);

CREATE TABLE regions (
    name        text PRIMARY KEY,
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    edge_url    text NOT NULL,
    capacity    integer CHECK (capacity >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE regions IS 'Named places that run edge nodes; placement picks among them.';
COMMENT ON COLUMN regions.name IS 'Region name, e.g. eu-west.';
COMMENT ON COLUMN regions.lat IS 'Latitude of the region, degrees.';
COMMENT ON COLUMN regions.lon IS 'Longitude of the region, degrees.';
COMMENT ON COLUMN regions.edge_url IS 'Public base URL of the region''s edge; connection URLs start with it.';
COMMENT ON COLUMN regions.capacity IS 'Optional cap on live backends in the region; null = sum of node capacities.';
COMMENT ON COLUMN regions.created_at IS 'When the region was first registered.';
COMMENT ON COLUMN regions.updated_at IS 'When the region was last changed.';

CREATE TABLE edge_nodes (
    id                  text PRIMARY KEY,
    region              text NOT NULL REFERENCES regions (name),
    address             text NOT NULL,
    capacity            integer NOT NULL CHECK (capacity >= 0),
    applied_version     bigint NOT NULL DEFAULT 0,
    last_heartbeat_at   timestamptz NOT NULL DEFAULT now(),
    registered_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE edge_nodes IS 'Edge processes, one or more per region; each is also its region''s drone and runs backends.';
COMMENT ON COLUMN edge_nodes.id IS 'Node id chosen by the edge (nd-...), stable across its restarts.';
COMMENT ON COLUMN edge_nodes.region IS 'Region the node serves.';
COMMENT ON COLUMN edge_nodes.address IS 'Base URL other edges use to forward requests to this node.';
COMMENT ON COLUMN edge_nodes.capacity IS 'Most live backends the node runs.';
COMMENT ON COLUMN edge_nodes.applied_version IS 'System version the node last reported having applied (liveness data: not replicated).';
COMMENT ON COLUMN edge_nodes.last_heartbeat_at IS 'Time of the last heartbeat; a node silent past NODE_LOST_AFTER_S is unhealthy (not replicated).';
COMMENT ON COLUMN edge_nodes.registered_at IS 'When the node first registered.';
CREATE INDEX edge_nodes_region ON edge_nodes (region);

CREATE TABLE templates (
    id          text PRIMARY KEY,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE templates IS 'Immutable spawn specs, content-addressed.';
COMMENT ON COLUMN templates.id IS 'tp- followed by the sha256 of the canonical JSON of spec.';
COMMENT ON COLUMN templates.spec IS 'The spawn spec: executor, argv or image, env, timeouts, readiness path, resources.';
COMMENT ON COLUMN templates.created_at IS 'When this spec was first stored.';

CREATE TABLE template_names (
    name        text PRIMARY KEY,
    template_id text NOT NULL REFERENCES templates (id),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE template_names IS 'The name callers use for a template, pointing at its current content-addressed spec.';
COMMENT ON COLUMN template_names.name IS 'Template name used in connect.';
COMMENT ON COLUMN template_names.template_id IS 'Current spec of the name; backends keep the spec they were started with.';
COMMENT ON COLUMN template_names.updated_at IS 'When the name last pointed at a new spec.';

CREATE TABLE api_tokens (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
COMMENT ON TABLE api_tokens IS 'Bearer tokens of the HTTP API; only their hash is stored.';
COMMENT ON COLUMN api_tokens.id IS 'Token id (tk-...), safe to show.';
COMMENT ON COLUMN api_tokens.name IS 'Human name of the token.';
COMMENT ON COLUMN api_tokens.token_hash IS 'sha256 of the secret token.';
COMMENT ON COLUMN api_tokens.scopes IS 'Scopes granted: admin, client, edge.';
COMMENT ON COLUMN api_tokens.created_at IS 'When the token was created.';
COMMENT ON COLUMN api_tokens.revoked_at IS 'When the token was revoked; null while valid.';

CREATE TABLE backends (
    id                  text PRIMARY KEY,
    key                 text,
    template_name       text NOT NULL,
    template_id         text NOT NULL REFERENCES templates (id),
    region              text NOT NULL REFERENCES regions (name),
    node_id             text NOT NULL REFERENCES edge_nodes (id),
    address             text,
    status              text NOT NULL CHECK (status IN ('scheduled', 'starting', 'ready', 'draining', 'terminated')),
    fencing_token       bigint NOT NULL,
    owner_token_id      text,
    user_id             text,
    secret              text NOT NULL,
    termination_reason  text CHECK (termination_reason IN ('idle', 'lifetime', 'requested', 'failed', 'lost', 'superseded')),
    exit_code           integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    status_changed_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE backends IS 'Backends: running (or once running) instances of a template on an edge node.';
COMMENT ON COLUMN backends.id IS 'Backend id (bk-...).';
COMMENT ON COLUMN backends.key IS 'Key the backend serves; null for keyless spawns.';
COMMENT ON COLUMN backends.template_name IS 'Template name given to connect.';
COMMENT ON COLUMN backends.template_id IS 'Exact content-addressed spec the backend runs.';
COMMENT ON COLUMN backends.region IS 'Region the backend was placed in.';
COMMENT ON COLUMN backends.node_id IS 'Edge node that runs the backend.';
COMMENT ON COLUMN backends.address IS 'host:port of the backend once started, as reported by its edge.';
COMMENT ON COLUMN backends.status IS 'scheduled, starting, ready, draining, terminated; only ever moves forward.';
COMMENT ON COLUMN backends.fencing_token IS 'Strictly increasing over the successive backends of one key.';
COMMENT ON COLUMN backends.owner_token_id IS 'API token that created the backend; client-scoped tokens see only their own.';
COMMENT ON COLUMN backends.user_id IS 'User named in connect, if any.';
COMMENT ON COLUMN backends.secret IS 'MERIDIAN_SECRET given to the backend; the proxy sends it so the backend knows a request came through Meridian.';
COMMENT ON COLUMN backends.termination_reason IS 'Why the backend ended (set with draining or terminated).';
COMMENT ON COLUMN backends.exit_code IS 'Exit code reported by the executor, when the process ended.';
COMMENT ON COLUMN backends.created_at IS 'When the backend was scheduled.';
COMMENT ON COLUMN backends.status_changed_at IS 'When status last changed.';
CREATE INDEX backends_key ON backends (key);
CREATE INDEX backends_live_by_node ON backends (node_id) WHERE status IN ('scheduled', 'starting', 'ready');
CREATE INDEX backends_region_status ON backends (region, status);

CREATE TABLE backend_status_history (
    seq         bigserial PRIMARY KEY,
    backend_id  text NOT NULL REFERENCES backends (id),
    status      text NOT NULL,
    reason      text,
    at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE backend_status_history IS 'Every status a backend went through, for the events stream.';
COMMENT ON COLUMN backend_status_history.seq IS 'Global order of status changes; the SSE event id.';
COMMENT ON COLUMN backend_status_history.backend_id IS 'Backend whose status changed.';
COMMENT ON COLUMN backend_status_history.status IS 'The new status.';
COMMENT ON COLUMN backend_status_history.reason IS 'termination_reason with draining/terminated.';
COMMENT ON COLUMN backend_status_history.at IS 'When the status changed.';
CREATE INDEX backend_status_history_backend ON backend_status_history (backend_id, seq);

CREATE TABLE keys (
    key             text PRIMARY KEY,
    backend_id      text REFERENCES backends (id),
    fencing_token   bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE keys IS 'One row per key ever used: its current backend and its fencing-token counter.';
COMMENT ON COLUMN keys.key IS 'The caller''s key (at most 256 bytes, no control characters).';
COMMENT ON COLUMN keys.backend_id IS 'Current backend of the key; the key is held while that backend is live.';
COMMENT ON COLUMN keys.fencing_token IS 'Highest fencing token issued for the key; the next backend gets a greater one.';
COMMENT ON COLUMN keys.updated_at IS 'When the key last changed hands.';

CREATE TABLE signing_keys (
    id          text PRIMARY KEY,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
COMMENT ON TABLE signing_keys IS 'HMAC keys for connection tokens; replicated to edges so they verify tokens offline.';
COMMENT ON COLUMN signing_keys.id IS 'Key id named inside each token.';
COMMENT ON COLUMN signing_keys.secret IS 'base64url HMAC-SHA256 key.';
COMMENT ON COLUMN signing_keys.created_at IS 'When the key was created; the newest unretired key signs.';
COMMENT ON COLUMN signing_keys.retired_at IS 'When the key stopped signing; tokens it signed still verify until deleted.';

CREATE TABLE token_revocations (
    id          text PRIMARY KEY,
    backend_id  text NOT NULL REFERENCES backends (id),
    user_id     text,
    revoked_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE token_revocations IS 'Revoked connection tokens: those of a backend issued at or before revoked_at, for one user or all.';
COMMENT ON COLUMN token_revocations.id IS 'Revocation id (rv-...).';
COMMENT ON COLUMN token_revocations.backend_id IS 'Backend whose tokens are revoked.';
COMMENT ON COLUMN token_revocations.user_id IS 'Only this user''s tokens; null = every token of the backend.';
COMMENT ON COLUMN token_revocations.revoked_at IS 'Tokens issued at or before this instant stop working.';
