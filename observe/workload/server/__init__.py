"""`observe serve`: the reference model behind an OpenAI-compatible HTTP API.

`openai_api` reads requests and writes responses in OpenAI's shapes, `errors` their error
bodies, `figures` what the server reports through OpenTelemetry, `app` the FastAPI routes
over an `InferenceEngine`, and `http` runs it on uvicorn until SIGTERM.
"""
