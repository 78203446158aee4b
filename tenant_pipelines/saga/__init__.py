"""The provisioning saga as plain Python: phases, compensation, the failure and email policies.

Everything it touches arrives through the ports in `ports.py`; Dagster ops, hooks and sensors
call it, and unit tests drive it with in-memory implementations of those ports.
"""
