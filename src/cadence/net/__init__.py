"""Talking to remote serving engines (vLLM, SGLang, llama.cpp server, Whisper and TTS servers).

One small HTTP layer shared by the remote LLM, ASR and TTS backends: timeouts, connect retries.
"""
