"""The plugin's pages in the Airflow UI (docs/ui.md): the Grey upgrades page, the Rollout tab of
a plan DAG's run and its finished form (the report), server-rendered from the report document."""
