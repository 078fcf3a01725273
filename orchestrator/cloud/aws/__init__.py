"""The AWS backend (boto3): EC2 workers, the Lambda burst function, S3 model artifacts and spot
notices from EventBridge → SQS. Imported only when a deployment chooses ``backend.name: aws``
(``orchestrator.cloud.registry``), so the local backend never loads boto3.

Modules: ``session`` (clients, retries, endpoint), ``tags`` (the deployment's tags, the fleet from
them), ``ec2`` (the only EC2 caller), ``cloud`` (``AwsCloud``), ``interruptions`` (spot notices),
``function`` (``AwsFunction``), ``artifacts`` (S3 models), ``backend`` (the registry's verbs).
Each module's docstring lists the IAM actions it calls.
"""
