"""The embedded local backend: instances as worker processes (``instances``), Lambda as a pool of
handler processes (``lambda_pool``; each environment's process in ``lambda_process``, the frames on its
pipes in ``lambda_wire``, the Function URL event and answer in ``function_url``)."""
