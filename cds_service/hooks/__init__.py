"""CDS Hooks: the service registry (discovery and routing both read it), request parsing and
the pipeline record -> facts -> rules -> cards. Depends on fhir/, knowledge/, rules/."""
