#[test]
fn probe() {
    let mut g =
        bertc_import::onnx::import_file(std::path::Path::new("/tmp/dyn/bert-micro.onnx")).unwrap();
    for r in bertc_passes::canonicalize(&mut g).unwrap() {
        eprintln!("{r:?}");
    }
}
