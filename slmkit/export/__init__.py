"""Export one model artifact to several serving formats (HF, ONNX GenAI, GGUF), each verified
by loading it back in the runtime that will serve it."""
