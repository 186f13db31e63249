import dagster as dg

from deploy_code_location.definitions import defs
from deploy_code_location.defs.smoke_test import release_smoke_test_job
from shared_code_location.contract.resources import OutputFolderResource


def test_smoke_job_passes_on_a_real_release(release_dir):
    result = release_smoke_test_job.execute_in_process(
        resources={"output_folder": OutputFolderResource(folder=str(release_dir))}
    )
    assert result.success
    assert len(result.output_for_node("generate_and_check")["sample"]) == 100


def test_smoke_job_fails_loudly_without_a_release(tmp_path):
    result = release_smoke_test_job.execute_in_process(
        resources={"output_folder": OutputFolderResource(folder=str(tmp_path))}, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no good release yet" in str(failure.event_specific_data)


def test_deploy_location_wires_automation_schedule_and_gates():
    assert defs.resolve_schedule_def("release_smoke_test_schedule").cron_schedule == "0 * * * *"
    assert defs.resolve_sensor_def("4_deploy_automation").default_status == dg.DefaultSensorStatus.RUNNING
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"onnx_matches_pytorch", "release_loads_and_generates"} <= checks
