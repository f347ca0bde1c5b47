"""Clinical knowledge as data: drug and condition tables, value sets, MME factors, and the
classifier that reads them. Loaded once at start-up; depends only on fhir.read."""
