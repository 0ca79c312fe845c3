"""The defaults of the services btcflow runs that help texts show: plain constants, so that `--help` needs
no settings library; the settings classes declare their fields with the same names."""

from pathlib import Path

STACK_DIR = Path("data/stack")  # BTCFLOW_STACK_DIR: apart from the embedded defaults' data/
STACK_BROKER_PORT = 9192  # BTCFLOW_STACK_BROKER_PORT: clear of the embedded defaults' 9092
STACK_NODES = 3  # Kafka nodes of `btcflow stack up`
STACK_SPARK_WORKERS = 2  # Spark workers of `btcflow stack up`
STACK_DATANODES = 3  # HDFS DataNodes of `btcflow stack up`: every block on three of them
HDFS_HOST = "127.0.0.1"  # BTCFLOW_HDFS_HOST: the address every HDFS daemon binds
HDFS_PORT = 9820  # BTCFLOW_HDFS_PORT: the NameNode's RPC port (hdfs://host:port)
HDFS_HTTP_PORT = 9870  # BTCFLOW_HDFS_HTTP_PORT: the NameNode's web UI, JMX and WebHDFS
HDFS_HEAP = "256m"  # BTCFLOW_HDFS_HEAP: heap of each HDFS daemon
HDFS_DATANODES = 1  # BTCFLOW_HDFS_DATANODES: DataNodes of `btcflow hdfs start`
