from etl_code_location.definitions import defs


def test_every_asset_has_kinds_and_links_to_its_source():
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.kinds, f"{key.to_user_string()} has no kinds"
        references = node.metadata["dagster/code_references"].code_references
        assert all(ref.file_path.endswith((".py", ".yaml")) for ref in references), key
