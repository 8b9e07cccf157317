"""The official Azure IoT Python SDK provisioning one X.509 device against a DPS endpoint on
port 8883 (the mock broker), for bench/one-device.sh.

    python one_device.py HOST ID_SCOPE REGISTRATION_ID CERT KEY CA
"""
import sys

from azure.iot.device import ProvisioningDeviceClient, X509

host, scope, registration_id, cert, key, ca = sys.argv[1:7]
with open(ca) as f:
    trust = f.read()
client = ProvisioningDeviceClient.create_from_x509_certificate(
    provisioning_host=host,
    registration_id=registration_id,
    id_scope=scope,
    x509=X509(cert_file=cert, key_file=key),
    server_verification_cert=trust,
)
result = client.register()
state = result.registration_state
print(f"{result.status}: {state.assigned_hub if state else None}")
sys.exit(0 if result.status == "assigned" else 1)
