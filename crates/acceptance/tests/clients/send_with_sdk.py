"""Sends real SDK traffic to a DSN with the official Python SDK (sentry-sdk) and prints a JSON
summary of the ids it sent. Usage: python send_with_sdk.py DSN

What it sends, each as the SDK does by default (gzip-compressed envelopes over HTTP):
  error        an exception with a stack trace (ZeroDivisionError)
  message      a captured message at warning level
  attachment   an event with a 10,240-byte attachment
  report       a user report (user_report item) for the error event
  feedback     a feedback (feedback item) naming the error event
  transaction  a transaction (not processed by sluice: counted with an outcome)
"""

import json
import sys
import time
import uuid

import sentry_sdk
from sentry_sdk.envelope import Envelope, Item, PayloadRef

summary = {}


def main(dsn):
    sentry_sdk.init(
        dsn=dsn,
        release="sdk-app@1.0.0",
        environment="acceptance",
        traces_sample_rate=1.0,
        server_name="sdk-host",
    )

    def inner(x):
        return 1 / x

    def outer():
        return inner(0)

    try:
        outer()
    except ZeroDivisionError:
        summary["error"] = sentry_sdk.capture_exception()

    summary["message"] = sentry_sdk.capture_message("checkout took too long", level="warning")

    with sentry_sdk.new_scope() as scope:
        scope.add_attachment(bytes=bytes(i % 251 for i in range(10240)), filename="blob-10k.bin")
        summary["attachment"] = sentry_sdk.capture_message("event with a 10 KB attachment")

    # A user report, as the legacy user-feedback API sends it.
    report = Envelope(headers={"event_id": summary["error"]})
    report.add_item(
        Item(
            payload=PayloadRef(
                json={
                    "event_id": summary["error"],
                    "name": "Jane Tester",
                    "email": "jane@example.com",
                    "comments": "It broke when I clicked the button.",
                }
            ),
            type="user_report",
        )
    )
    sentry_sdk.get_client().transport.capture_envelope(report)

    # A feedback, as the SDKs' feedback APIs send it (this SDK has no helper for it: the
    # envelope is built with its own classes and sent by its own transport).
    feedback_id = uuid.uuid4().hex
    feedback = Envelope(headers={"event_id": feedback_id})
    feedback.add_item(
        Item(
            payload=PayloadRef(
                json={
                    "event_id": feedback_id,
                    "timestamp": time.time(),
                    "platform": "python",
                    "level": "info",
                    "contexts": {
                        "feedback": {
                            "message": "The new feedback widget works!",
                            "contact_email": "jane@example.com",
                            "name": "Jane Tester",
                            "associated_event_id": summary["error"],
                            "source": "api",
                        }
                    },
                }
            ),
            type="feedback",
        )
    )
    sentry_sdk.get_client().transport.capture_envelope(feedback)
    summary["feedback"] = feedback_id

    with sentry_sdk.start_transaction(name="checkout", op="task"):
        pass

    sentry_sdk.flush(timeout=10)
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
