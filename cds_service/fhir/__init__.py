"""FHIR R4 access: lenient readers of resources, the FHIR client with its deadlines and
access policy, and loading one patient's record from prefetch and fallback reads."""
