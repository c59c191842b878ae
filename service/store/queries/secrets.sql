-- name: district_ids
SELECT district_id FROM districts ORDER BY district_id;

-- name: lock_secrets
-- Row-locked so a concurrent UpsertDistrict waits for the re-sealed values, or they for it.
SELECT ps_client_secret, clever_client_secret, clever_district_token, classlink_client_secret
FROM districts WHERE district_id = $1 FOR UPDATE;

-- name: store_secrets
UPDATE districts
SET ps_client_secret = $2, clever_client_secret = $3, clever_district_token = $4,
    classlink_client_secret = $5
WHERE district_id = $1;

-- name: secret_key_ids
-- The key ID of every stored sealed value, with how many values each seals.
SELECT split_part(v, ':', 2) AS key_id, count(*) AS n
FROM districts,
     unnest(ARRAY[ps_client_secret, clever_client_secret, clever_district_token,
                  classlink_client_secret]) AS v
WHERE v LIKE 'wbs1:%'
GROUP BY 1;
