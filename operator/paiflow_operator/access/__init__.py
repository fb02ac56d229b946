"""Who may have the operator act in PAI: PaiAccessPolicy evaluation, its live view and the identities it names."""
