"""Serving measurements: serving benchmarks' results, their requests, and their simulations.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

Additive:
- serving_measurements: one run of a serving benchmark (vllm bench serve, SGLang bench_serving, GuideLLM) with the
  setup it ran on (GPU, runtime, engine and release, model variant and mode, engine limits, host profile, logits
  processor, vCPUs), its load (requests, rate, burstiness, max concurrency) and the tool's aggregates (throughputs;
  TTFT, TPOT, ITL and end-to-end latency: mean, median, p99 in milliseconds); unique by content.
- serving_measurement_requests: its requests' lengths and latencies, when the file lists them.
- serving_predictions: the simulation of the same requests on the same setup under a host profile version.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_LATENCY = [f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "median", "p99")]


def _latency_columns() -> list[sa.Column]:
    return [sa.Column(name, sa.Double(), nullable=True) for name in _LATENCY]


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("serving_measurements"):
        return  # a registry whose alembic_version was set back keeps what it has
    op.execute(sa.schema.CreateSequence(sa.Sequence("serving_measurements_id_seq")))
    op.create_table(
        "serving_measurements",
        sa.Column("id", sa.BigInteger(), sa.Sequence("serving_measurements_id_seq"),
                  server_default=sa.text("nextval('serving_measurements_id_seq')"), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("tool", sa.String(40), nullable=False),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.Column("model_id", sa.String(200), nullable=True),
        sa.Column("hardware_id", sa.BigInteger(), nullable=False),
        sa.Column("runtime_profile_id", sa.BigInteger(), nullable=False),
        sa.Column("engine", sa.String(100), nullable=False),
        sa.Column("engine_version", sa.Integer(), nullable=False),
        sa.Column("engine_release", sa.String(200), nullable=True),
        sa.Column("variant", sa.String(20), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("page", sa.String(40), nullable=True),
        sa.Column("images_per_request", sa.Integer(), nullable=False),
        sa.Column("max_num_seqs", sa.Integer(), nullable=False),
        sa.Column("max_num_batched_tokens", sa.Integer(), nullable=False),
        sa.Column("host_profile", sa.String(100), nullable=False),
        sa.Column("host_version", sa.Integer(), nullable=False),
        sa.Column("ngram_size", sa.Integer(), nullable=True),
        sa.Column("ngram_window", sa.Integer(), nullable=True),
        sa.Column("vcpus", sa.Integer(), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("request_rate_per_s", sa.Double(), nullable=True),
        sa.Column("burstiness", sa.Double(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("total_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("request_throughput_per_s", sa.Double(), nullable=False),
        sa.Column("output_throughput_tokens_per_s", sa.Double(), nullable=False),
        sa.Column("per_request_rows", sa.Boolean(), nullable=False),
        sa.Column("setup", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        *_latency_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_serving_measurements"),
        sa.UniqueConstraint("content_sha256", name="uq_serving_measurements_content_sha256"),
        sa.ForeignKeyConstraint(["hardware_id"], ["hardware.id"], name="fk_serving_measurements_hardware_id"),
        sa.ForeignKeyConstraint(["runtime_profile_id"], ["runtime_profiles.id"],
                                name="fk_serving_measurements_runtime_profile_id"),
    )
    op.create_table(
        "serving_measurement_requests",
        sa.Column("measurement_id", sa.BigInteger(), nullable=False),
        sa.Column("request_index", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Double(), nullable=True),
        sa.Column("e2el_ms", sa.Double(), nullable=True),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("measurement_id", "request_index", name="pk_serving_measurement_requests"),
        sa.ForeignKeyConstraint(["measurement_id"], ["serving_measurements.id"],
                                name="fk_serving_measurement_requests_measurement_id"),
    )
    op.create_table(
        "serving_predictions",
        sa.Column("measurement_id", sa.BigInteger(), nullable=False),
        sa.Column("host_profile", sa.String(100), nullable=False),
        sa.Column("host_version", sa.Integer(), nullable=False),
        sa.Column("simulated_at", sa.DateTime(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("total_output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("request_throughput_per_s", sa.Double(), nullable=False),
        sa.Column("output_throughput_tokens_per_s", sa.Double(), nullable=False),
        sa.Column("bound_by", sa.String(20), nullable=False),
        *_latency_columns(),
        sa.PrimaryKeyConstraint("measurement_id", "host_profile", "host_version", name="pk_serving_predictions"),
        sa.ForeignKeyConstraint(["measurement_id"], ["serving_measurements.id"],
                                name="fk_serving_predictions_measurement_id"),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
