"""Model card paragraphs: how to run each exported file without slmkit installed."""

from __future__ import annotations


def gguf_notes(gguf_rel: str) -> str:
    return (
        "### Run the GGUF file with llama.cpp\n\n"
        "```bash\n"
        f"llama-cli -m {gguf_rel} -cnv -p \"You are a helpful assistant.\" -n 128\n"
        f"llama-server -m {gguf_rel} --port 8080   # OpenAI-compatible HTTP API\n"
        "```\n\n"
        "or from Python (`pip install llama-cpp-python`):\n\n"
        "```python\n"
        "from llama_cpp import Llama\n"
        f"llm = Llama(model_path=\"{gguf_rel}\", n_ctx=2048)\n"
        "print(llm.create_chat_completion(messages=[{\"role\": \"user\", \"content\": \"Hello!\"}], max_tokens=64))\n"
        "```"
    )


def onnx_notes(onnx_rel: str) -> str:
    return (
        "### Run the ONNX directory with onnxruntime-genai\n\n"
        "```bash\npip install onnxruntime-genai\n```\n\n"
        "```python\n"
        "import onnxruntime_genai as og\n"
        f"model = og.Model(\"{onnx_rel}\")\n"
        "tokenizer = og.Tokenizer(model)\n"
        "prompt = tokenizer.apply_chat_template('[{\"role\": \"user\", \"content\": \"Hello!\"}]', add_generation_prompt=True)\n"
        "params = og.GeneratorParams(model)\n"
        "params.set_search_options(max_length=256)\n"
        "generator = og.Generator(model, params)\n"
        "generator.append_tokens(tokenizer.encode(prompt))\n"
        "while not generator.is_done():\n"
        "    generator.generate_next_token()\n"
        "print(tokenizer.decode(generator.get_sequence(0)))\n"
        "```"
    )


def hf_notes(hf_rel: str) -> str:
    return (
        "### Load the HF directory with transformers (or serve it with vLLM)\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained(\"{hf_rel}\")\n"
        f"tokenizer = AutoTokenizer.from_pretrained(\"{hf_rel}\")\n"
        "```\n\n"
        f"```bash\nvllm serve {hf_rel}\n```"
    )
