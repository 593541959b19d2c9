"""Security checks of the control plane, free of Airflow and HTTP: approval tokens
(`security.approval`, PyJWT) and signed artifacts (`security.artifacts`, cryptography)."""
