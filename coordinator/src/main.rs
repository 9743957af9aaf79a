//! pgherd-coordinator: watches `acid.zalan.do/v1` postgresql resources (grows in its own issue).

fn main() {
    println!("pgherd-coordinator {}", env!("CARGO_PKG_VERSION"));
}
