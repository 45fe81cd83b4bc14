fn main() {
    println!("timectl");
}
