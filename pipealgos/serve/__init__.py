"""Inference: SageMaker's hosting contract (``/ping``, ``/invocations``) for any pipealgos model.

``app.create_app(model_dir)`` builds the Flask app, ``server.run_server(...)`` runs it under
gunicorn, ``formats`` turns request bodies into features and outputs into responses.
"""
