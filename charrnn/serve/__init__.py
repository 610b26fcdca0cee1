"""Serving a model over HTTP to many clients at once: the continuous-batching worker that
advances every open stream in one batched step (scheduler), the checks that turn a request
body into sampling options or an OpenAI-style error (protocol), the HTTP layer with its
OpenAI- and Ollama-compatible endpoints (app), and the playground page. It reads a saved
run like the other inference packages and never imports training."""
