"""The use cases, one function each, that every door calls: submit (`submit`), retry,
decommission, compensate, discard and the Dagster UI's own launches (`lifecycle`), and the
compensation of failed runs (`compensation`). Each owns its rules once (who may, what state
admits it, the tenant's one operation claim, the launch, release on error, naming the run); the
doors (the API, `/local`, the console, both modes of `tenantctl`, the failure hook, the sensors,
the Dagster UI's door) only translate their input and output. What a use case needs from the
orchestrator is a port (`ports`), implemented below (`orchestration`, `runtime`)."""
