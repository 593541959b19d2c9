"""Development tools of powerx-grey-upgrade: the sandbox platform simulator, the local Airflow
stack runner, the Prometheus runner and the demo. They import the runtime package
`powerx_upgrade`; the runtime package never imports them."""
