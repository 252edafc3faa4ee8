from sync import timing


def test_timing_constants_keep_their_order() -> None:
    # A node must miss several heartbeats before it is lost, and be lost long before its keys fail over.
    assert timing.HEARTBEAT_INTERVAL_S * 3 <= timing.NODE_LOST_AFTER_S
    assert timing.NODE_LOST_AFTER_S * 10 <= timing.KEY_FAILOVER_AFTER_S
    # A fallback poll must be much shorter than a long-poll, and revocation must reach edges in time.
    assert timing.SYNC_FALLBACK_POLL_S <= timing.TOKEN_REVOCATION_PROPAGATION_S
    assert timing.SYNC_FALLBACK_POLL_S < timing.SYNC_LONG_POLL_S
    assert timing.BACKOFF_INITIAL_S < timing.BACKOFF_MAX_S
    # Cached API-token lookups must expire long before a connection token does.
    assert timing.AUTH_CACHE_TTL_S < timing.CONNECTION_TOKEN_TTL_S
    # A followed log shows new lines faster than rotation checks come round.
    assert timing.LOG_FOLLOW_POLL_S <= timing.LOG_CHECK_S
    # A deleted API token is refused by every control plane as soon as by every edge.
    assert timing.AUTH_CACHE_TTL_S <= timing.TOKEN_REVOCATION_PROPAGATION_S
    # Fleet gauges are re-read more often than a node takes to be lost, so the gauges show it.
    assert timing.METRICS_REFRESH_S <= timing.NODE_LOST_AFTER_S
    assert timing.METRICS_READ_TIMEOUT_S < timing.METRICS_REFRESH_S
    # A stop waits for its last export for less time than a heartbeat would take to notice it.
    assert timing.TELEMETRY_SHUTDOWN_S <= timing.HEARTBEAT_INTERVAL_S
    # A slow request head is cut well before an idle kept-alive connection would be.
    assert timing.REQUEST_HEAD_TIMEOUT_S < timing.KEEPALIVE_IDLE_S
    # The server side of a kept-alive connection outlasts the client side: the client closes first.
    assert timing.CONTROL_CLIENT_KEEPALIVE_S < timing.CONTROL_SERVER_KEEPALIVE_S
    # A connect during an outage waits out at most one short dial, and skips it only briefly.
    assert timing.CONTROL_PROBE_CONNECT_S + timing.CONTROL_PROBE_QUIET_S <= timing.HEARTBEAT_INTERVAL_S


def test_a_dns_outage_costs_little_and_rarely() -> None:
    # A lookup against a silent DNS server gives up within a few seconds, and is not retried on
    # every heartbeat: the last good answer is used meanwhile.
    assert timing.DISCOVERY_LOOKUP_TIMEOUT_S * 2 < timing.NODE_LOST_AFTER_S
    assert timing.DISCOVERY_RETRY_S >= timing.HEARTBEAT_INTERVAL_S * 3
    assert timing.DISCOVERY_MIN_TTL_S <= timing.DISCOVERY_RETRY_S < timing.DISCOVERY_MAX_TTL_S


def test_a_drain_leaves_a_new_user_time_to_open_their_connection() -> None:
    # The edge learns of a drain from a heartbeat; a backend handed out just before must survive the
    # moment between its URL being answered and the user opening it.
    assert timing.HEARTBEAT_INTERVAL_S * 2 <= timing.DRAIN_IDLE_AFTER_S < timing.KEY_FAILOVER_AFTER_S


def test_the_dashboard_sees_a_change_within_two_seconds_without_polling_faster_than_once_a_second() -> None:
    assert timing.FLEET_EVENTS_CHECK_S >= 1.0
    assert timing.FLEET_EVENTS_CHECK_S + timing.SYNC_FALLBACK_POLL_S <= 2.0
    assert timing.FLEET_EVENTS_MIN_INTERVAL_S < timing.FLEET_EVENTS_CHECK_S
    assert timing.FLEET_EVENTS_CHECK_S < timing.FLEET_EVENTS_KEEPALIVE_S


def test_a_status_stream_speaks_before_common_proxy_idle_timeouts_cut_it() -> None:
    assert timing.STATUS_STREAM_KEEPALIVE_S < 60  # nginx's proxy_read_timeout default


def test_reconciliation_and_database_recovery_fit_their_promises() -> None:
    # An edge learns the control plane is back from a heartbeat, and must still replay in time.
    assert timing.HEARTBEAT_INTERVAL_S * 2 <= timing.RECONCILE_WITHIN_S < timing.NODE_LOST_AFTER_S
    # A returning control plane reconciles journals long before keys of silent edges fail over.
    assert timing.RECONCILE_WITHIN_S < timing.KEY_FAILOVER_AFTER_S
    # One restart pause, plus PostgreSQL's own crash recovery, fits within the promised recovery.
    assert timing.EMBEDDED_DB_RESTART_MAX_S * 2 <= timing.EMBEDDED_DB_RECOVERY_S
    assert timing.DB_RETRY_AFTER_S <= timing.EMBEDDED_DB_RESTART_MAX_S


def test_a_refused_warm_pool_claim_costs_less_than_a_cold_start_may_take() -> None:
    # A member that hangs on its claim is given up well within the default start timeout (30 s),
    # and the pool notices a dead member or a drain within a heartbeat.
    assert timing.WARM_POOL_CLAIM_TIMEOUT_S < 30 / 10
    assert timing.WARM_POOL_CHECK_S <= timing.HEARTBEAT_INTERVAL_S
    # A pool waiting for a quiet moment to refill is checked again within that moment.
    assert timing.WARM_POOL_CHECK_S <= timing.WARM_POOL_REFILL_QUIET_S
