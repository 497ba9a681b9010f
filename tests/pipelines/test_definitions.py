from dagster import AssetKey

from pipelines.definitions import defs


def test_definitions_load_with_every_raw_asset_partitioned_per_connection():
    keys = defs.resolve_all_asset_keys()
    assert AssetKey(["raw_quickbooks", "invoice"]) in keys
    assert AssetKey(["raw_sequence", "line_items"]) in keys
    graph = defs.resolve_asset_graph()
    for key in (k for k in keys if k.path[0].startswith("raw_")):
        partitions = graph.get(key).partitions_def
        assert partitions is not None and partitions.name.endswith("_connections")


def test_every_warehouse_writer_takes_the_single_writer_pool():
    for assets_def in defs.resolve_asset_graph().assets_defs:
        assert assets_def.node_def.pool == "warehouse"
