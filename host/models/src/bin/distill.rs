//! `distill [--sif A] [--no-centre] ENCODER_DIR OUT_DIR`: a static model
//! (model2vec's layout) from a BERT sentence encoder (sentence-transformers'
//! layout). `--sif` sets the rarity weighting's `a` (1e-4; 0: none),
//! `--no-centre` keeps the rows' common direction. The result is written
//! beside `OUT_DIR` and moved into place when complete.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut options = wasmhive_models::table::Options::default();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--no-centre") => options.centre = false,
            Some("--sif") => match args.next().and_then(|a| a.to_str()?.parse().ok()) {
                Some(a) if a >= 0.0 => options.sif = a,
                _ => {
                    eprintln!("distill: --sif takes a number >= 0");
                    return ExitCode::from(2);
                }
            },
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let [src, dst] = &paths[..] else {
        eprintln!("usage: distill [--sif A] [--no-centre] ENCODER_DIR OUT_DIR");
        return ExitCode::from(2);
    };
    let tmp = dst.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let started = Instant::now();
    let mut last = 0;
    let outcome = wasmhive_models::table::distill(src, &tmp, options, |done, total| {
        let percent = done * 100 / total.max(1);
        if percent >= last + 10 || done == total {
            last = percent;
            eprintln!("distilling {}: {done}/{total} tokens", src.display());
        }
    })
    .and_then(|()| {
        let _ = std::fs::remove_dir_all(dst);
        std::fs::rename(&tmp, dst).map_err(|e| format!("{}: {e}", dst.display()))
    });
    match outcome {
        Ok(()) => {
            eprintln!(
                "distilled {} into {} in {:.1} s",
                src.display(),
                dst.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("distill: {e}");
            ExitCode::FAILURE
        }
    }
}
