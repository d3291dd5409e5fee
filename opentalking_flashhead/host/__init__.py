"""Everything that knows about OpenTalking lives here; the pipeline imports host types only from here."""
