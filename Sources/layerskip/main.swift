print("layerskip")
