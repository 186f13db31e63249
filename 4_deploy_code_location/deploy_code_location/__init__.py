"""4_deploy: export to ONNX, check parity, release into example_output_resources/, serve over HTTP."""
