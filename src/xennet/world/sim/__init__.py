"""The sim world's toolstack (xenstored, domains as shared-memory files, vif directories), the
process runner that gives each domain its own OS process, and the sim domain programs."""
