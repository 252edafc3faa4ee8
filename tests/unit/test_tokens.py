import pytest

from sync import tokens


def _claims(expires_at: int = 2_000, user: str | None = "ada") -> tokens.ConnectionClaims:
    return tokens.ConnectionClaims(backend_id="bk-1", user=user, expires_at=expires_at, issued_at=1_000)


def test_signed_token_verifies_and_round_trips_claims() -> None:
    secret = tokens.new_signing_secret()
    token = tokens.sign(_claims(), "sk-a", secret)
    assert tokens.key_id_of(token) == "sk-a"
    assert tokens.verify(token, secret, now=1_500) == _claims()


def test_token_is_a_single_url_path_segment() -> None:
    token = tokens.sign(_claims(user="a/b?c#d"), "sk-a", tokens.new_signing_secret())
    assert "/" not in token and "?" not in token and "#" not in token


def test_wrong_key_tampered_payload_and_expiry_are_refused() -> None:
    secret = tokens.new_signing_secret()
    token = tokens.sign(_claims(), "sk-a", secret)
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(token, tokens.new_signing_secret(), now=1_500)
    head, key, _payload, mac = token.split(".")
    forged_payload = tokens.sign(_claims(user="eve"), "sk-a", tokens.new_signing_secret()).split(".")[2]
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(".".join([head, key, forged_payload, mac]), secret, now=1_500)
    with pytest.raises(tokens.TokenExpired):
        tokens.verify(token, secret, now=2_000)


@pytest.mark.parametrize("bad", ["", "v1", "v1.a.b.c", "../../etc/passwd", "v1.sk.%2e%2e.x" + "A" * 43, "x" * 5000])
def test_malformed_tokens_are_refused_before_any_crypto(bad: str) -> None:
    with pytest.raises(tokens.TokenInvalid):
        tokens.key_id_of(bad)


def test_claims_carry_microseconds_so_a_revoke_is_not_rounded_to_its_second() -> None:
    secret = tokens.new_signing_secret()
    now_ns = 1_700_000_000_123_456_789
    signed = tokens.sign(tokens.claims_now("bk-1", "alice", 60, now_ns=now_ns), "k1", secret)
    claims = tokens.verify(signed, secret, now=1_700_000_000)
    assert claims.issued_us == 1_700_000_000_123_456
    assert claims.issued_at == 1_700_000_000 and claims.expires_at == 1_700_000_060


def test_a_token_without_microseconds_counts_as_issued_at_the_start_of_its_second() -> None:
    secret = tokens.new_signing_secret()
    old = tokens.sign(tokens.ConnectionClaims("bk-1", None, 2_000, 1_000), "k1", secret)
    assert tokens.verify(old, secret, now=1_500).issued_us == 1_000_000_000
