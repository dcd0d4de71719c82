"""The AMQP transport (RabbitMQ through aiormq), split by job; see ``transport.py``."""

from core.bus.amqp.common import delay_queue_name, parking_queue_name
from core.bus.amqp.transport import AmqpTransport

__all__ = ["AmqpTransport", "delay_queue_name", "parking_queue_name"]
