-- Scoped API tokens: confinement to a key prefix, a user and a list of templates; expiry; who minted them.

ALTER TABLE api_tokens
    ADD COLUMN key_prefix text,
    ADD COLUMN user_id text,
    ADD COLUMN templates text[],
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN created_by text REFERENCES api_tokens (id);
COMMENT ON COLUMN api_tokens.key_prefix IS 'The token sees and connects only keys starting with this; null = any key.';
COMMENT ON COLUMN api_tokens.user_id IS 'Every connection token obtained with this token is for this user; null = any user.';
COMMENT ON COLUMN api_tokens.templates IS 'The only templates this token may name or see; null = every template.';
COMMENT ON COLUMN api_tokens.expires_at IS 'After this instant the token is refused; null = never expires.';
COMMENT ON COLUMN api_tokens.created_by IS 'The token that minted this one (lists and deletes its own); null = bootstrap or admin.';

CREATE INDEX api_tokens_created_by ON api_tokens (created_by) WHERE created_by IS NOT NULL;
CREATE INDEX backends_owner_token ON backends (owner_token_id) WHERE owner_token_id IS NOT NULL;
