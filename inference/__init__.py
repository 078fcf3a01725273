"""The model runtime shared by the EC2 worker, the Lambda function and the profiler.

ONNX Runtime sessions (`runtime`), the KServe v2 tensor codec (`codec`), model cards (`cards`) and
the model repository (`repository`). Depends on numpy and onnxruntime only, so it fits in a Lambda.
"""
