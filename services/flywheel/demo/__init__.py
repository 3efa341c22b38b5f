"""``flywheel demo``: the drift scenario run against a live mesh through its public APIs.

``scenario`` (the seeded synthetic world), ``clients`` (gRPC clients with deadlines),
``run`` (the actors and the report), ``analysis`` (accuracy and recovery), ``audit`` (lost
records), ``plot`` (the PNG) and ``progress`` (the live line).
"""
