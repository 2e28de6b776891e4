-- Remote agents: the token that registered an agent. Its later calls must
-- come with the same token, and another token cannot take over its
-- identity while it is live.

ALTER TABLE agents ADD COLUMN token text NOT NULL DEFAULT '';
