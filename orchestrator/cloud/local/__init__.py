"""The embedded local backend: instances as worker processes (``instances``), Lambda as a pool of
handler processes (``lambda_pool``)."""
