"""Low-level helpers every layer may use: process-group context and collectives, seeding, atomic writes, meters,
progress reporting, bad-row reports, model wrappers. Nothing here imports another part of hiera_video."""
