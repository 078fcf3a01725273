"""The Lambda function: the same KServe v2 infer route as the worker, one request per environment.

``lambda_fn.handler.handler`` is the AWS entry point; ``python -m lambda_fn.local_env`` is one local
execution environment (used by ``orchestrator.cloud.local.lambda_pool``).
"""
